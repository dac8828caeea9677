"""The pure core: domain rules, step splitting, answers, the ProcessBench measure, file writes, rendering, the HTTP
client the workers use and the experiment configs. Every app may import it; it imports no app and no Django (an
import-linter contract in pyproject.toml keeps it so)."""
