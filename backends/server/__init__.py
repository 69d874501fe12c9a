"""Models served elsewhere: vLLM, SGLang, TGI, llama-server, ollama, ``transformers serve`` or any
OpenAI-compatible server, reached by URL. What the server is and can tell (probe), its prompt
(tokenize endpoints), its metrics, and the HTTP client under them (httpx, the ``remote`` extra)."""
