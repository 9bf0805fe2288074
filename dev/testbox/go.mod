module zopilot.dev/testbox

go 1.22
