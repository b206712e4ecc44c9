"""Inference backends (ONNX Runtime, TensorRT) behind one protocol, and the model I/O contract.

No torch and no rclpy here; tensorrt and the CUDA bindings are imported only when used.
"""
