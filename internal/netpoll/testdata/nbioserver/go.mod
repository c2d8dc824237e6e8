module nbioserver

go 1.26

require github.com/lesismal/nbio v1.6.8
