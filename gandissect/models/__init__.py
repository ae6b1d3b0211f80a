"""Models: the architectures, the loaders of user files and the registry of shipped models.

Every model spelling (``sceneworld``, ``torchvision:ARCH``, ``proggan:PATH``, ``stylegan2:PATH``,
``package.module:factory``, ...) resolves through ``gandissect.models.specs``; weight files are
read by ``gandissect.models.loaders.files.read_state_dict``, which never runs code from them.
"""
