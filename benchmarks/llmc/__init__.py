"""What benchmarks/llmc_oneshot.py and tests/search/results/test_llmc_oneshot.py share: llm-compressor
in a cached side virtualenv (`side`). A package, not a benchmark script.
"""
