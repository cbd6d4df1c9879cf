"""Training: the trainer that distils the teacher into the student, and the release recipe runner."""
