from mock_network.cli import main

main()
