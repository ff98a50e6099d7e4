"""Static mode: files under static_path, with a cache watched by inotify."""
