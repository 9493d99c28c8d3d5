"""larpanda.io"""
