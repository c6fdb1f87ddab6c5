"""ROS 2 integration: the live fusion node, its parameters, message building and CLI entry.

Only this package (and the bag player/recorder) imports rclpy; everything it drives lives in
the ROS-free core (convert, sync, pipeline).
"""
