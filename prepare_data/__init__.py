"""Data preparation: LooGLE passages to SFT / RL / eval parquet for verl."""
