"""Training consistency models for cmedit: data, UNet factory, ECT loss/schedule, loop (see `loop.train`)."""
