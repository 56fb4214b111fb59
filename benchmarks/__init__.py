"""cowmem's asv suite: what a forked child copies, per data kind, access and interpreter."""
