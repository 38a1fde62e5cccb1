"""Infrastructure rendering: CloudFormation for the queues, rules and alarms an app needs, and its ECS service."""
