"""``python -m boards``: print the supported boards and their capacity."""

from boards import board_table

if __name__ == "__main__":
    print(board_table())
