"""Training varlite models: the tokenizer, the transformer, the judging classifier; metrics and checkpoints."""
