"""Generated gRPC stubs of proto/ward/v1 (python/generate_stubs.py). Do not edit."""
