"""rosbag2 files (sqlite3 and MCAP) read and written with the `rosbags` library, no ROS install needed."""
