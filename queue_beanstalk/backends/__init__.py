"""The backends shipped with queue_beanstalk: beanstalkd and in-memory."""
