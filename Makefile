# The README's commands. Each creates .venv first if needed (scripts/setup.sh).
.PHONY: demo test lint
demo:
	scripts/demo.sh
test:
	scripts/test.sh
lint:
	scripts/lint.sh
