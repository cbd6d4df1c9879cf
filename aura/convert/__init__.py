"""Native weight files (GGUF, CTranslate2) converted once into Hugging Face folders for the registry."""
