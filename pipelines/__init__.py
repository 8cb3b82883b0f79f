"""cureflow pipelines: simulate, train, evaluate, register (may import serving; serving never imports this)."""
