"""python -m services.data_aggregation [serve|migrate]"""

from services.data_aggregation.bootstrap import main

main()
