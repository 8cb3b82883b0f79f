"""cureflow serving: the real-time API and the batch scorer, both over one loaded model bundle."""
