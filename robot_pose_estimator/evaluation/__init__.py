"""Offline evaluation: rosbag2 replay (rosbags), the DESIGN.md section 4 metrics, reports and plots.

No rclpy here except inside ``play`` (a ROS publisher by nature), imported only when used.
"""
