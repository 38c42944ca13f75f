pytest_plugins = ["pytester"]  # meta-tests of bnspec's plugin run small claim suites in-process
