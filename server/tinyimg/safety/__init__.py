"""Content checks: a checker scores each generated image (``checkers``), a policy decides what a
flagged image becomes (``policy``), and a deny-list refuses prompts before they are queued."""
