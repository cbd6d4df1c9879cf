"""The Whisper teacher: the encoder-decoder (Hugging Face or CTranslate2 files) and its content-addressed
state cache."""
