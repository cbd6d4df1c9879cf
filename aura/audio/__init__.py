"""Audio in: reading files and bytes into 16 kHz mono, and the log-mel features the Whisper encoder reads."""
