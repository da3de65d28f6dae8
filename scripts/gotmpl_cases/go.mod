module gotmplcases

go 1.22
