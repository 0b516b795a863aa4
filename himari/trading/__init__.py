"""Trading: the model bundle, the decision engine (features -> regime -> policy -> sizing -> risk) and the bar-by-bar
trading session shared by backtests, paper trading and the API."""
