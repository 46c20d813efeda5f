"""Where numbers go: TensorBoard, the terminal, the log file and metrics.json, under the same names."""
