"""Pure numpy/OpenCV geometry and the per-frame pipeline. Never imports rclpy or torch."""
