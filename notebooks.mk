# placeholder until the notebooks land (issue 6)
all: $(VENV)/.stamp
	@echo "the study notebooks are not wired yet"
