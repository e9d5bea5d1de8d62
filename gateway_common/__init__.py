"""What the fake gateway and the harness both need: trace record types, the user-error type,
protocol facts. Imports nothing of ours."""
