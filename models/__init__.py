"""cureflow core: the contract, features, estimators, policy and rules shared by training and serving."""
