module github.com/limitr/limitr

go 1.26.8

require (
	github.com/govalues/decimal v0.1.36
	github.com/pelletier/go-toml/v2 v2.4.3
	gopkg.in/yaml.v3 v3.0.1
)
