"""The command-centre web UI: its front-end build (`build`) and how the node serves it (`static`)."""
