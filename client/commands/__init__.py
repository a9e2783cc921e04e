"""Client-side `fwemu` sub-commands (each talks to a control plane by URL or in-process)."""
