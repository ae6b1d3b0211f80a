"""Loaders for user models, one module per family; ``gandissect.models.specs`` picks one by the
spelling of a ``--generator`` / ``--classifier`` / ``--segmenter`` argument.

    files        weight files read without running code (weights_only pickles, safetensors)
    proggan      GAN Dissection ProGAN checkpoints -> ``ProGANGenerator``
    stylegan2    rosinality stylegan2-pytorch checkpoints -> ``StyleGAN2Generator``
    nvidia       NVIDIA's StyleGAN2-ADA / StyleGAN3 pickles, unpickled without running code
                 -> ``StyleGAN2Generator`` / ``StyleGAN3Generator``
    classifiers  torchvision architectures with a user weights file
    timm_classifiers  timm architectures with a weights file, and the Hub's timm folders
    hf_classifiers    Hugging Face transformers image classifiers (save_pretrained folders)
    huggingface  Hugging Face transformers segmenters
    segmenters   real-image segmenters: Unified Perceptual Parsing (``upp:``), CSAIL's ADE20K
                 scene parsing (``semseg:``), torchvision's segmentation models
    plugins      ``package.module:factory`` entry points, TorchScript files, generator checks
"""
