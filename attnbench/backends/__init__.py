"""The attention backends: their facts, registry, patch into YOLO12, proof of the kernel
that ran, parity and attention shapes (rules/attention.smk: attention_shapes, parity)."""
