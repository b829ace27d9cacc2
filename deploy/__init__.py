"""Getting workers running: local processes now; SSH, launchd and systemd later."""
