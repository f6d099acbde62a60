"""{{name}}: the talk's filter service on Falcon."""
