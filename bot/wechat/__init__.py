"""The WeChat official-account edge: signatures, AES, XML, the /wechat handler, the WeChat API."""
