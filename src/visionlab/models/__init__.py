"""Every model is an nn.Module built from (in_shape, num_classes) plus its config, returning [N, C] scores."""
