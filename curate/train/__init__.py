"""Training from a manifest: data, guard, TRL/PEFT run, release packet, merge."""
