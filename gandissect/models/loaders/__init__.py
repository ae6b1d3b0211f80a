"""Loaders for user models, one module per family; ``gandissect.models.specs`` picks one by the
spelling of a ``--generator`` / ``--classifier`` / ``--segmenter`` argument.

    files        weight files read without running code (weights_only pickles, safetensors)
    proggan      GAN Dissection ProGAN checkpoints -> ``ProGANGenerator``
    stylegan2    rosinality stylegan2-pytorch checkpoints -> ``StyleGAN2Generator``
    classifiers  torchvision architectures with a user weights file
    plugins      ``package.module:factory`` entry points, TorchScript files, generator checks
"""
