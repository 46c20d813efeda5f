"""Every model is an nn.Module built from (in_shape, num_classes) plus its config, returning [N, C] scores.

One that declares a `pixel_stats` argument also gets the training split's per-channel (mean, std), with which the
images reaching it were standardized (experiment.fresh_model): torchvision.py's pretrained networks use them to see
pixels normalized as their weights were.
"""
