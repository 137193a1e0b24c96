"""mpgpt's chat side: the WeChat edge, the chat service and the model providers."""
