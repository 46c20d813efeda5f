"""The fit/evaluate loop and the device it runs on."""
