"""The instruments: step time, profiling samplers and kernel timing; the kernel benchmark
(rules/attention.smk: kernel_bench)."""
