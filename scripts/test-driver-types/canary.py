# A testScript with one mistake of each kind the checks exist for. scripts/check-vm-test-scripts
# runs every checker on it first (with one machine, `alpha`) and fails unless each one rejects
# it: a checker that passes this is not checking anything (a missing stub, a wrong search path).
alpha.succed("true")  # a misspelt driver method: mypy and ty
alpha.wait_for_unit(5)  # a wrong argument type: mypy and ty
print(not_a_driver_symbol)  # an undefined name: pyflakes and ruff (and mypy, ty)
