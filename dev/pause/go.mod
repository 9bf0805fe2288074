module zopilot.dev/pause

go 1.22
