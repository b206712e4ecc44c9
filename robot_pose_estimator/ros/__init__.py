"""The ROS 2 layer: message conversions, the node, diagnostics. The only place that imports rclpy."""
