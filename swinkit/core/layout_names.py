"""The names of the checkpoint layouts swinkit reads and writes, without importing their converters (or torch), so
that the command line can offer them in ``--help`` at once."""

NATIVE = "swinkit"
LAYOUT_NAMES = ("timm", "microsoft", "hf", "torchvision", "mindspore", "paddle", "openmmlab")
FORMATS = ("auto", NATIVE, *LAYOUT_NAMES)  # what load_checkpoint reads
WRITE_FORMATS = (NATIVE, *LAYOUT_NAMES)  # what save_checkpoint writes
DENSE_LAYOUT_NAMES = ("mmseg", "mmdet")  # whole dense models' own layouts (UperNet, Faster/Mask R-CNN), both ways
