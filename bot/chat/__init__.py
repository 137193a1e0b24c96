"""The chat service: commands, conversations, generations and delivery of answers."""
